"""tfds builder folder of the embedded `digit_captions` dataset (see README.md)."""
