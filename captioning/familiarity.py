"""How familiar a photo is to the caption models: how close its features are to the training photos.

The definition, stated once here:

1. ``f``: the photo's pooled encoder features, (2560,) for the default encoder (Lite0 + Lite2).
2. ``z = P f / |f|``: ``f`` scaled to length 1 and projected onto ``P``, the first ``dims``
   principal directions of the 6,000 Flickr8k training photos' features (a PCA *not* centred:
   the right singular vectors of the training feature matrix).  The training photos go through
   the same projection, so ``z . t`` is the cosine of the two photos' features counting only
   the part inside those directions: a photo whose features lie mostly outside them (unlike
   every training photo) scores low.
3. **similarity**: the mean of ``z . t`` over the ``k`` training photos ``t`` with the largest.
4. **percentile**: the share (in %) of the 1,000 Flickr8k *test* photos whose similarity (the
   same statistic, against the training photos) is lower: 50 means as familiar as a typical
   test photo, 1 means less familiar than 99% of them.
5. **familiar**: ``percentile >= UNFAMILIAR_BELOW`` (5): by construction 5% of photos like
   Flickr8k's are called unfamiliar.

Why (measured on the 1,000 dev photos and the 13 distinct photos of evaluation/ood/ and
demo/examples/; "AUC" is the chance that a dev photo scores above one of those 13; the first
three points with EfficientNet-Lite0's 1280-d features, the encoder before Lite0 + Lite2):

* No centring.  Pooled CNN features are all positive and share one large common direction;
  how much of a photo lies along the training photos' common direction is itself what makes it
  Flickr8k-like.  Centring on the training mean throws that away: AUC 0.87 and 8 of 13 photos
  flagged, against 0.97 and 10 of 13 without.
* ``k = 5``, ``dims = 128``: AUC was 0.96-0.97 for every k in 1-10 and dims in 64-256 (0.96
  with plain 1280-d cosines), so the choice matters little.  k = 5 does not let one accidental
  look-alike make a photo familiar; 128 directions hold 74% of the training features' energy and
  keep the reference file at 2.4 MB.
* The cut at 5 flags 4.8% of dev photos and 10 of the 13 photos (cats, cheetahs, a lion, coffee,
  a flower, a temple, a rocket, the Hubble deep field, all at or below the 0.3rd percentile, and
  Grace Hopper's portrait at the 4th).  It passes the cameraman (5th percentile), the astronaut
  (12th) and a motorcycle (15th): people and motorbikes outdoors are what Flickr8k shows.  A cut
  at 20 would catch those three too, but also a fifth of ordinary photos (a dev photo of
  children on a skateboard scores 18).
* Rechecked with Lite0 + Lite2 (2560-d; same k, dims and cut): AUC 0.974; 128 directions hold
  72% of the energy and the file is 3.0 MB; the cut flags 5.4% of dev photos and 11 of the 13:
  the same 10 and the cameraman (Grace Hopper and the cameraman at the 4th percentile), while
  the astronaut (7th) and the motorcycle (14th) pass.

``python -m tools.familiarity_check [--reference FILE]`` prints the AUC, the energy share, the
photos called unfamiliar and the everyday photos' percentiles for a reference file.

A training photo is its own nearest neighbour, so training photos score above typical test
photos, but not at 100: the self-similarity is only the share of the photo inside ``P``.

The reference (:data:`DEFAULT_PATH`, built by ``python -m training.build_familiarity``) is an
HDF5 file of plain arrays: no pickle, nothing deserialised as code.  Loading checks every
array's shape, type and size before reading it and fails with a :class:`FamiliarityError`
that names the file.

    familiarity = Familiarity.load()               # weights/familiarity.h5
    result = familiarity.score(encoder.features(image))
    result.percentile, result.familiar, result.note
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoders import ENCODERS

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "weights" / "familiarity.h5"
FORMAT_VERSION = 1
UNFAMILIAR_BELOW = 5.0  # percentile of test photos under which a photo is called unfamiliar

# Limits checked before anything is read (the committed file is 3.0 MB); an array is capped
# too, because a compressed HDF5 array can be far larger than its file.
MAX_FILE_BYTES = 64 * 2**20
MAX_ARRAY_BYTES = 64 * 2**20

UNFAMILIAR_NOTE = ("This photo is unlike the photos the models were trained on (Flickr8k: mostly people "
                   "and dogs, outdoors), so the captions are likely to be wrong.")


class FamiliarityError(ValueError):
    """The familiarity reference file is missing or malformed."""


@dataclass(frozen=True)
class FamiliarityResult:
    similarity: float   # mean cosine similarity to the k nearest training photos, in [-1, 1]
    percentile: float   # % of Flickr8k test photos with a lower similarity, in [0, 100]
    nearest: list[str]  # file names of the k nearest training photos, nearest first
    familiar: bool      # percentile >= UNFAMILIAR_BELOW
    note: str           # one plain sentence for the page


def project(features: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Features (n, F) -> (n, D): divided by their full length, then projected.  Dot products of
    these are cosines in the full space minus the part outside the D components, so a photo whose
    features lie mostly outside the training photos' components scores low."""
    features = features.astype(np.float32)
    lengths = np.linalg.norm(features, axis=1, keepdims=True)          # (n, 1)
    return features @ components.T / np.where(lengths > 0, lengths, 1)  # all-zero features stay 0


def fit_components(features: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal directions (dims, F) float32 of ``features`` (N, F), not
    centred (see the module docstring), each one's sign fixed (largest entry positive) so the same
    features give the same file on any BLAS."""
    _, _, vt = np.linalg.svd(features.astype(np.float64), full_matrices=False)
    components = vt[:dims]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return (components * signs[:, None]).astype(np.float32)


class Familiarity:
    """Scores a features vector against a reference set of training photos (see the module docstring)."""

    def __init__(self, encoder: str, k: int, components: np.ndarray,
                 train_projected: np.ndarray, train_names: list[str], test_similarity: np.ndarray):
        self.encoder = encoder
        self.k = k
        self.components = components            # (D, F) float32
        self.train_projected = train_projected  # (N, D) float16, rows of length <= 1
        self.train_names = train_names          # N file names
        self.test_similarity = test_similarity  # (M,) float32, sorted ascending
        self._train = train_projected.astype(np.float32)  # (N, D): float32 for fast, exact-enough dot products

    @property
    def feature_dim(self) -> int:
        return self.components.shape[1]

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, encoder: str, train_features: np.ndarray, train_names: list[str],
            test_features: np.ndarray, k: int = 5, dims: int = 128) -> "Familiarity":
        """A reference from training features (N, F) and test features (M, F)."""
        components = fit_components(train_features, dims)
        train_projected = project(train_features, components).astype(np.float16)
        reference = cls(encoder, k, components, train_projected, list(train_names),
                        np.zeros(0, np.float32))
        test_similarity, _ = reference._similarities(test_features)
        reference.test_similarity = np.sort(test_similarity).astype(np.float32)
        return reference

    def save(self, path: str | Path) -> None:
        """Write atomically; the same reference gives the same bytes."""
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w", track_order=False) as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["encoder"] = self.encoder
            f.attrs["k"] = self.k
            f.create_dataset("components", data=self.components)
            f.create_dataset("train_projected", data=self.train_projected)
            f.create_dataset("train_names", data=np.array([n.encode() for n in self.train_names]))
            f.create_dataset("test_similarity", data=self.test_similarity)
        os.replace(tmp, path)

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "Familiarity":
        import h5py

        path = Path(path)
        if not path.is_file():
            raise FamiliarityError(f"{path}: file is missing (build it with python -m training.build_familiarity)")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise FamiliarityError(f"{path}: file is larger than {MAX_FILE_BYTES} bytes, the most a reference may hold")
        try:
            with h5py.File(path, "r") as f:
                return cls._from_hdf5(f, path)
        except FamiliarityError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py's words for a damaged file
            raise FamiliarityError(f"{path}: not a readable familiarity reference ({exc})") from None

    @classmethod
    def _from_hdf5(cls, f, path: Path) -> "Familiarity":
        def fail(message: str):
            raise FamiliarityError(f"{path}: {message}")

        version = f.attrs.get("format_version")
        if version != FORMAT_VERSION:
            fail(f"format version {version!r}, expected {FORMAT_VERSION}")
        encoder = f.attrs.get("encoder")
        encoder = encoder.decode() if isinstance(encoder, bytes) else encoder
        if encoder not in ENCODERS:
            fail(f"unknown encoder {encoder!r} (known: {', '.join(ENCODERS)})")
        feature_dim = ENCODERS[encoder].feature_dim

        def array(name: str, kind: str, shape: tuple) -> np.ndarray:
            """Dataset ``name`` after checking its dtype kind and shape (None: any size), before reading it."""
            if name not in f or not hasattr(f[name], "dtype"):
                fail(f"no '{name}' array")
            dataset = f[name]
            if dataset.size * dataset.dtype.itemsize > MAX_ARRAY_BYTES:
                fail(f"'{name}' holds more than {MAX_ARRAY_BYTES} bytes")
            if dataset.dtype.kind != kind or len(dataset.shape) != len(shape) or any(
                    want is not None and got != want for got, want in zip(dataset.shape, shape)):
                fail(f"'{name}' is {dataset.dtype} {dataset.shape}, expected kind '{kind}' with shape "
                     f"{tuple('any' if s is None else s for s in shape)}")
            return dataset[()]

        components = array("components", "f", (None, feature_dim))
        dims = components.shape[0]
        if not 1 <= dims <= feature_dim:
            fail(f"{dims} PCA components, expected 1 to {feature_dim}")
        train_projected = array("train_projected", "f", (None, dims))
        n_train = len(train_projected)
        names = array("train_names", "S", (n_train,))
        test_similarity = array("test_similarity", "f", (None,))
        if not len(test_similarity):
            fail("'test_similarity' is empty")
        k = f.attrs.get("k")
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_train:
            fail(f"k must be a whole number from 1 to {n_train}, not {k!r}")
        for name, values in (("components", components), ("train_projected", train_projected),
                             ("test_similarity", test_similarity)):
            if not np.isfinite(values).all():
                fail(f"'{name}' holds values that are not finite")
        if np.any(np.diff(test_similarity) < 0) or np.abs(test_similarity).max() > 1 + 1e-3:
            fail("'test_similarity' must be cosine similarities sorted ascending")
        return cls(encoder, int(k), components.astype(np.float32),
                   train_projected.astype(np.float16), [n.decode() for n in names],
                   test_similarity.astype(np.float32))

    # -- scoring ----------------------------------------------------------------------------

    def _similarities(self, features: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarity (n,), indices of the k (default: the reference's) nearest training photos
        (n, k), nearest first) of features (n, F)."""
        k = self.k if k is None else min(k, len(self._train))
        z = project(features, self.components)                                       # (n, D)
        cosines = z @ self._train.T                                                     # (n, N)
        top = np.argpartition(-cosines, k - 1, axis=1)[:, :k]                           # (n, k), unordered
        top_cosines = np.take_along_axis(cosines, top, axis=1)
        order = np.argsort(-top_cosines, axis=1, kind="stable")
        return top_cosines.mean(axis=1), np.take_along_axis(top, order, axis=1)

    def nearest(self, features: np.ndarray, k: int) -> list[str]:
        """File names of the ``k`` training photos nearest to one photo's features (feature_dim,),
        nearest first, by the same projected cosine as the similarity."""
        features = self._checked(features)
        return [self.train_names[i] for i in self._similarities(features[None], k)[1][0]]

    def _checked(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features)
        if features.shape != (self.feature_dim,) or not np.isfinite(features).all():
            raise ValueError(f"expected {self.feature_dim} finite {self.encoder} features, got shape {features.shape}")
        return features

    def percentile(self, similarity: float) -> float:
        """% of the test photos whose similarity is lower than ``similarity``."""
        below = np.searchsorted(self.test_similarity, similarity, side="left")
        return float(100.0 * below / len(self.test_similarity))

    def score(self, features: np.ndarray) -> FamiliarityResult:
        """Familiarity of one photo from its encoder features (feature_dim,)."""
        features = self._checked(features)
        similarity, nearest = self._similarities(features[None])
        similarity = float(similarity[0])
        percentile = self.percentile(similarity)
        familiar = percentile >= UNFAMILIAR_BELOW
        note = (f"Closer to the training photos than {percentile:.0f}% of the Flickr8k test photos."
                if familiar else UNFAMILIAR_NOTE)
        return FamiliarityResult(similarity, percentile, [self.train_names[i] for i in nearest[0]], familiar, note)
