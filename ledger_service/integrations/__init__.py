"""Where usage comes from: LiteLLM, OpenTelemetry GenAI traces and the providers' SDK responses,
each turned into the ledger's charges (docs/INTEGRATIONS.md).

Each integration imports its third-party package lazily, from its own extra
(``[litellm]``, ``[otel]``, ``[sdk]``): the base install needs none of them.
"""
