"""Where neural recordings come from (``data.source``), behind one interface.

:mod:`~deepmouse.data.sources.base` defines what a source does, one module per source
implements it, and :mod:`~deepmouse.data.sources.registry` maps ``data.source`` names to
them. Nothing is imported or registered here.
"""
