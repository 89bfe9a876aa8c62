"""Deployment helpers: the container health check and the Kubernetes renderer.

- ``healthcheck``: the image's HEALTHCHECK (``python -m ezthrottle_server.infra.healthcheck``).
- ``k8s``: renders ``infra/k8s/`` from regions.yaml
  (``python -m ezthrottle_server.infra.k8s --out infra/k8s``).
- ``dashboards``, ``prometheus``: the Grafana dashboards and the Prometheus
  configs, written or checked through ``generated.write_or_check``.
"""
