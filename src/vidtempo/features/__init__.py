"""Stage 1, the feature store: videos in, one CNN feature vector per sampled frame out.

``store`` defines the HDF5 format (one file per split) and reads and writes it; ``extract`` (a subpackage)
decodes videos, samples frames, runs the frozen CNN, and writes the store in shards that resume;
``video_splits`` makes train/val/test folders from one folder per class; ``sharding`` splits work between
processes; ``synthetic`` writes small feature stores for tests and benchmarks. Exports the store's main
names; the extraction API is ``vidtempo.features.extract`` (imported on demand: it brings PyAV and torch).
"""

from .store import MULTISCALE_SUFFIX, SPLITS, FeatureSplit, SplitWriter, read_split, read_splits, split_path, write_split

__all__ = ["MULTISCALE_SUFFIX", "SPLITS", "FeatureSplit", "SplitWriter", "read_split", "read_splits", "split_path",
           "write_split"]
