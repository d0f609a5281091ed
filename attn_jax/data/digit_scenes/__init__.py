"""tfds builder folder of the embedded `digit_scenes` dataset (see README.md)."""
