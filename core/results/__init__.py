"""What a clustering is worth, from its labels and features alone: quality metrics, per-image
confidence and outlier scores, image issues, label review, choosing k, the summary in words."""
