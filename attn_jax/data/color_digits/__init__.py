"""tfds builder folder of the embedded `color_digits` dataset (see README.md)."""
