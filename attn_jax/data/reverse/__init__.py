"""tfds builder folder of the embedded `reverse` dataset (see README.md)."""
