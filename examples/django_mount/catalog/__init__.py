"""The example's one Django app: a catalogue of books, edited in the admin."""
