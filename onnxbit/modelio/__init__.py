"""Model files in and out: which paths a conversion may write (paths), writing
several files so that all or none appear (publish), and serializing a model
whose weight bytes live outside the proto, one tensor at a time (save)."""
