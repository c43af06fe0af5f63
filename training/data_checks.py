"""Warnings about the data a model is trained and tested on: printed at the start, kept in metrics.json.

None of these stops a run (a user may know why a class is rare); each says what the numbers will
not show and what to do about it.
"""

from __future__ import annotations

from collections import Counter

from training.data import Dataset

MIN_CLASS_EXAMPLES = 10  # below this a class is mostly memorised names, and its fold scores are noise
MIN_TEST_DOCUMENTS = 100  # below this one document moves accuracy by more than a point


def data_warnings(dataset: Dataset) -> list[str]:
    """One line per problem; ``dataset`` is the whole training part (validation not yet taken out)."""
    warnings = []
    train, test = Counter(dataset.train_labels), Counter(dataset.test_labels)
    rare = [(name, train[i]) for i, name in enumerate(dataset.label_names) if train[i] < MIN_CLASS_EXAMPLES]
    if rare:
        listed = ", ".join(f"{name!r} ({count})" for name, count in rare)
        warnings.append(f"classes with fewer than {MIN_CLASS_EXAMPLES} training examples: {listed}; too few to "
                        "learn or to measure: add examples, or merge or drop these classes")
    untested = [name for i, name in enumerate(dataset.label_names) if not test[i]]
    if untested:
        warnings.append(f"classes with no document in the test split: {', '.join(map(repr, untested))}; the "
                        "report says nothing about them: add examples, or give --test-data with them")
    if len(dataset.test_labels) < MIN_TEST_DOCUMENTS:
        warnings.append(f"the test split has {len(dataset.test_labels)} documents: each one moves accuracy by "
                        f"{100 / max(1, len(dataset.test_labels)):.1f} points, too few to compare models: "
                        "add data, or give a larger --test-data")
    return warnings
