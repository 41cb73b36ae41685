//! EPAS Serve engine and OpenAI-compatible HTTP server (in progress: the model core comes first).
