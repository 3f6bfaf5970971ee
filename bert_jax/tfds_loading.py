"""tensorflow-datasets loading with one clear error instead of a download traceback."""

from __future__ import annotations


def load(name: str, split: str, data_dir: str | None = None, download: bool = True, **kwargs):
    """``tfds.load(name, split=split, ...)``; a missing, undownloadable or broken dataset is a ValueError
    that says how to provide it."""
    import tensorflow_datasets as tfds

    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=download, **kwargs)
    except Exception as e:  # tfds raises download, registry, split and file errors of many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"tfds dataset {name}[{split}] could not be loaded ({type(e).__name__}: {first[:300]}). On a machine "
            f"without internet, build it elsewhere (`tfds build {name.split('/')[0]}`) and copy the data_dir "
            f"here (data_dir={data_dir or 'the tfds default, ~/tensorflow_datasets'}).") from None
