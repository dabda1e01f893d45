"""The page's text catalogs, one dict module per language (see core/i18n.py for the key scheme)."""
