"""The release tool's parts (tools/release.py runs them).

``projects`` reads the user distributions from ``packages/*/pyproject.toml``,
``build`` builds them, ``check`` verifies the built files, ``version`` sets one
version everywhere, ``stage`` lays the files out in publishing order.
"""
