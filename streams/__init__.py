"""rtscore stream processing: settings, codecs, the scoring processor, local infra and the CLI."""

__version__ = "0.1.0"
