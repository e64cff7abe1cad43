"""An OTLP/gRPC trace sink: answers every Export with an empty (successful)
response and logs the running totals whenever they change."""

import signal
import threading
from concurrent import futures

import grpc

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
lock = threading.Lock()
totals = {"exports": 0, "bytes": 0}


def export(request: bytes, _context) -> bytes:
    with lock:
        totals["exports"] += 1
        totals["bytes"] += len(request)
    # An empty ExportTraceServiceResponse: everything accepted.
    return b""


class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        # No (de)serializers: the request arrives as its encoded bytes.
        return grpc.unary_unary_rpc_method_handler(export) if details.method == EXPORT else None


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((Handler(),))
    server.add_insecure_port("[::]:4317")
    server.start()
    print("otlp-sink: listening on :4317", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    last = None
    while not stop.wait(1.0):
        with lock:
            now = (totals["exports"], totals["bytes"])
        if now != last:
            print(f"otlp-sink: {now[0]} trace exports received ({now[1]} bytes)", flush=True)
            last = now
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
