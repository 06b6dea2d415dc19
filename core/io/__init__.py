"""Files: reading images and arrays (image files and folders, ``.npy``/``.npz``, the decode
cache), bounded reads of untrusted archives, files written whole or not at all, run folders and
their small files, content digests, and the files a user names for imgclust to write."""
