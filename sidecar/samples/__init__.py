"""The sampling policy, the recorder, the sample store, its query, export and API, and
the thumbnails."""
