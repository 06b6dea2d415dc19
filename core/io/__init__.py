"""Reading images and arrays from disk: image files and folders, ``.npy``/``.npz`` files, and the
decoded-image cache. Datasets (bundled or not) are thin classes over these functions.
"""
