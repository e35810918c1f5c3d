"""Gap maintenance: the service (service.py), incremental detection (detect.py), and repair
(repair.py)."""
