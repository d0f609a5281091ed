"""tfds builder folder of the embedded `sklearn_digits` dataset (see README.md)."""
