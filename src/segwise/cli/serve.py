"""`segwise serve`: a trained model behind HTTP, with a browser viewer at `/`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags
from segwise.cli.semantic import MODEL_ARGUMENT
from segwise.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a trained model over HTTP (POST /predict, GET /model, viewer at /)",
                       description="Loads the model once and answers POST /predict (multipart field 'file': PNG, "
                                   "JPEG or TIFF; ?output=index|counts|overlay, ?probs_class=K), GET /model, "
                                   "GET /health, the OpenAPI page at /docs and a browser viewer at /. Requests "
                                   "that arrive together share a forward pass. No authentication: it listens on "
                                   "127.0.0.1 unless --host says otherwise.")
    p.add_argument("model", type=Path, help=MODEL_ARGUMENT)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    p.add_argument("--batch-window-ms", type=float, default=10.0, metavar="MS",
                   help="collect requests for MS milliseconds after the first and run same-size images as one batch "
                        "(default 10; 0: no batching, one image per forward)")
    p.add_argument("--max-batch", type=flags.positive_int, default=8, metavar="N",
                   help="at most N images per forward (default 8)")
    flags.add_max_pixels_flag(p, "refuse uploads with more than N pixels (HTTP 413), read from the file header "
                                 "before decoding")
    flags.add_device_flag(p)
    flags.add_mode_flags(p)
    flags.add_ensemble_flags(p)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    mode = flags.inference_mode(args)
    flags.check_device(args.device)
    if args.batch_window_ms < 0:
        raise ConfigError(f"--batch-window-ms {args.batch_window_ms}: give 0 (no batching) or a positive number of "
                          "milliseconds, e.g. 10")
    from segwise.inference.modes import DEFAULT_MAX_PIXELS
    from segwise.inference.predictor import Predictor
    from segwise.progress import notice
    from segwise.serve import create_app
    from segwise.serve.server import LOOPBACK, bind_socket, uvicorn_server
    from segwise.tasks.semantic.predict import with_ensemble

    sock = bind_socket(args.host, args.port)  # a taken port fails before the model is loaded
    predictor = with_ensemble(Predictor.from_path(args.model, args.device, mode), args.model, args.ensemble,
                              args.ensemble_method, args.ensemble_weights)
    app = create_app(predictor, names=[str(args.model), *map(str, args.ensemble)],
                     max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, batch_window_ms=args.batch_window_ms,
                     max_batch=args.max_batch)
    host, port = sock.getsockname()[:2]
    if args.host not in LOOPBACK:
        notice(f"listening on {args.host}: anyone who can reach this machine can use the model (no authentication)")
    notice(f"segwise serve: viewer at http://{host}:{port}/ , API docs at http://{host}:{port}/docs (Ctrl-C stops)")
    try:
        uvicorn_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again: the normal way to stop
        notice("segwise serve: stopped")
