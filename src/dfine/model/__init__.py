"""D-FINE model parts: backbone, hybrid encoder, FDR decoder and post-processor."""
