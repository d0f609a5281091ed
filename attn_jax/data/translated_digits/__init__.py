"""tfds builder folder of the embedded `translated_digits` dataset (see README.md)."""
