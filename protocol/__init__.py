"""What the engine and the plugin share: standard library only, imported by both sides.

- :mod:`.errors`: the root error with its hint and exit code, and its subclasses;
- :mod:`.events`: the worker's JSON-lines events (encode, parse, version check);
- :mod:`.jobs`: the job specification sent to the worker;
- :mod:`.model_meta`: typed, validated model-file metadata and the pixel-size rule;
- :mod:`.model_header`: the model-file header reader (never the weights);
- :mod:`.options`: training options with their one set of defaults.
"""
