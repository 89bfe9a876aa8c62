#!/usr/bin/env python3
"""README "Quick Commands (One-Liners)": manage secrets from the command line.

Each one-liner runs as ``python -c``, in the README's ``os.getenv`` form (the
README's tip), with ``$EZTHROTTLE_API_KEY`` and ``$EZTHROTTLE_URL`` set.
"""

import json
import os
import subprocess
import sys

from _support import API_KEY, EZTHROTTLE_URL

env = {**os.environ, "EZTHROTTLE_API_KEY": API_KEY, "EZTHROTTLE_URL": EZTHROTTLE_URL}


def python_c(code):
    print("$ python -c", json.dumps(code))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    print(done.stdout, end="")
    return done.stdout


# Create secret
python_c("import os; from ezthrottle import EZThrottle; EZThrottle(api_key=os.getenv('EZTHROTTLE_API_KEY')).create_webhook_secret('your_secret_min_16_chars')")

# Get secrets (view masked)
shown = python_c("import os; from ezthrottle import EZThrottle; import json; print(json.dumps(EZThrottle(api_key=os.getenv('EZTHROTTLE_API_KEY')).get_webhook_secret(), indent=2))")
assert json.loads(shown)["primary_secret"] == "yo****rs"

# Rotate secret
python_c("import os; from ezthrottle import EZThrottle; EZThrottle(api_key=os.getenv('EZTHROTTLE_API_KEY')).rotate_webhook_secret('new_secret_min_16_chars')")
shown = python_c("import os; from ezthrottle import EZThrottle; import json; print(json.dumps(EZThrottle(api_key=os.getenv('EZTHROTTLE_API_KEY')).get_webhook_secret()))")
assert json.loads(shown)["primary_secret"] == "ne****rs"

# Delete secrets
deleted = python_c("import os; from ezthrottle import EZThrottle; print(EZThrottle(api_key=os.getenv('EZTHROTTLE_API_KEY')).delete_webhook_secret())")
assert "delete" in deleted.lower(), deleted
