"""Where the test session's real data comes from: one rule for `make test`, pytest and the tutorial test.

- 20 Newsgroups: ``LSTM_TRAIN_DATA`` when it names a file or folder; else the archive in
  ``../shared/data`` beside the repository; else scikit-learn's download, the one
  ``lstm-train --data 20newsgroups`` uses (cached in scikit-learn's data home after the first time).
- The SMS Spam Collection (the tutorial's data): ``SMS_DATA`` when it names a file; else
  ``../shared/data/sms-spam.tsv``; else the tutorial's download (UCI's zip), cached under
  ``$XDG_CACHE_HOME/lstm-worker`` (``~/.cache/lstm-worker``) after the first time.

Every fixture that needs a data set resolves it here, so each way of giving the data runs the same tests.

``python -m tests.support.datasets [news] [sms]`` (the Makefile's ``test`` and ``faults`` targets run it
first) exits 2 with one line saying what to set when a data set is neither here nor reachable; the test
session's collection hook (``tests/conftest.py``) stops on the same line before running anything that needs it.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.readers import NEWS_ALIAS

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# The tutorial downloads the SMS Spam Collection from here (docs/tutorial.md), and so does the resolver.
SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_PAGE = "https://archive.ics.uci.edu/dataset/228/sms+spam+collection"


@dataclass(frozen=True)
class Source:
    """A data set's location for the CLIs' ``--data`` (a path, or the download alias), or why there is none."""

    location: str | None
    problem: str = ""


@functools.cache
def news_source() -> Source:
    configured = os.environ.get("LSTM_TRAIN_DATA", "")
    if configured and configured != NEWS_ALIAS:
        if Path(configured).exists():
            return Source(str(Path(configured).resolve()))
        return Source(None, f"LSTM_TRAIN_DATA={configured} does not exist: point it at 20news-bydate.tar.gz")
    beside = SHARED_DATA / "20news-bydate.tar.gz"
    if beside.exists():
        return Source(str(beside))
    from training.exceptions import DataError
    from training.readers import fetch_news_online

    try:
        with warnings.catch_warnings():  # scikit-learn warns at each retry; the one line below says it all
            warnings.simplefilter("ignore")
            fetch_news_online()  # the users' download; a cached copy answers without the network
    except DataError:
        return Source(None, "20 Newsgroups is neither local nor downloadable: set LSTM_TRAIN_DATA to "
                            "20news-bydate.tar.gz (http://qwone.com/~jason/20Newsgroups/)")
    return Source(NEWS_ALIAS)


@functools.cache
def sms_source() -> Source:
    """The SMS Spam Collection file: ``SMS_DATA``, the copy beside the repository, or the cached download."""
    configured = os.environ.get("SMS_DATA", "")
    if configured:
        if Path(configured).is_file():
            return Source(str(Path(configured).resolve()))
        return Source(None, f"SMS_DATA={configured} is not a file: point it at the SMS Spam Collection")
    for candidate in (SHARED_DATA / "sms-spam.tsv", sms_cache()):
        if candidate.is_file():
            return Source(str(candidate))
    try:
        return Source(str(download_sms(sms_cache())))
    except OSError:
        return Source(None, "the SMS Spam Collection is neither local nor downloadable: set SMS_DATA to its "
                            f"file ({SMS_PAGE})")


def sms_cache() -> Path:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "lstm-worker" / "SMSSpamCollection"


def download_sms(target: Path) -> Path:
    """The tutorial's download: UCI's zip, whose ``SMSSpamCollection`` member is kept (written atomically)."""
    with urllib.request.urlopen(SMS_URL, timeout=30) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(archive.read("SMSSpamCollection"))
    partial.replace(target)
    return target


def problems(news: bool = True, sms: bool = True) -> list[str]:
    """What to set, one phrase per data set that is wanted but neither here nor reachable."""
    sources = [source() for wanted, source in ((news, news_source), (sms, sms_source)) if wanted]
    return [source.problem for source in sources if source.problem]


def main(wanted: list[str]) -> int:
    """``wanted``: ``news``, ``sms`` or both (the default)."""
    found = problems(news=not wanted or "news" in wanted, sms=not wanted or "sms" in wanted)
    if found:
        print("; ".join(found), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
