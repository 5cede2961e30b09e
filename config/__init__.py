"""The bundled configuration and signatures, installed as the package ``pipeline.bundled``
(pyproject.toml maps this folder there), so they are found from any working directory."""
