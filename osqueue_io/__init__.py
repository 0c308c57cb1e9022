"""osqueue's I/O shells: storage, the embedded queue, the gRPC broker and worker client."""
