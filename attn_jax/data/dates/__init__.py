"""tfds builder folder of the embedded `dates` dataset (see README.md)."""
