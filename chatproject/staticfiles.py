"""How static files are stored in production: whitenoise's compressed manifest storage, with
the JavaScript modules' imports rewritten to their hashed names too.

Without that rewrite, the web client's `main.js` (hashed, so always fresh) imports its other
modules by their plain names, which whitenoise serves with a short cache lifetime: for a
minute after a deploy, a browser could run the new `main.js` with older cached modules.
"""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
