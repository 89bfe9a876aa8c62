"""Deployment helpers: the container health check and the Kubernetes renderer.

- ``healthcheck``: the image's HEALTHCHECK (``python -m ezthrottle_server.deploy.healthcheck``).
- ``k8s``: renders ``infra/k8s/`` from regions.yaml
  (``python -m ezthrottle_server.deploy.k8s --out infra/k8s``).
"""
