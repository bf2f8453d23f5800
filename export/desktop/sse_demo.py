"""Entry script of the desktop bundle: the ``sse-demo`` command (see :mod:`sse_onnx.demo`)."""

import sys

from sse_onnx.demo import main

sys.exit(main())
