"""Files that survive a kill: atomic folders and files (:mod:`.atomic`), SHA-256 lists
(:mod:`.checksums`), hard-linked copies and the user's umask (:mod:`.links`). No model code: the
checkpoint format is read by :mod:`mclner.inference.checkpoint` and written by
:mod:`mclner.training.checkpoint`."""
