"""``python -m otel_monitoring``: the same CLI as the ``otel-monitoring`` console script."""

import sys

from otel_monitoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
