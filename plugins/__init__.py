"""The plugins bundled with imgclust, loaded through entry points like any third-party plugin."""
