"""tfds builder folder of the embedded `distorted_digits` dataset (see README.md)."""
