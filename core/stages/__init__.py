"""The contract between the core and its plugins: the stage interfaces and capabilities, the
table of stage kinds, the hook specifications, the plugin host, the registry, and settings read
from factories' signatures. Imports nothing of imgclust but its errors."""
