//! Nagare's end-to-end tests, one module per concern, in one test binary: one link of the
//! workspace instead of one per file. Each module starts what it needs (a gateway on the real
//! wiring, fakes, moto's server, redis-server) on free loopback ports; the shared helpers live in
//! the `nagare-tests` library.

mod anthropic_dialect;
mod attachments;
mod auth;
mod bedrock_provider;
mod cache;
mod chat_cli;
mod connection_store;
mod connections;
mod conversation_store;
mod converse;
mod converse_operator;
mod converse_transports;
mod deploy;
mod deploy_web;
mod gateway_http;
mod grpc;
mod grpc_python;
mod knowledge;
mod lambda_authorizer;
mod lambda_events;
mod lambda_http;
mod limits;
mod load_generator;
mod memory;
mod observability;
mod openai_dialect;
mod resilience;
mod routing;
mod shutdown;
mod task_delivery;
mod tasks;
mod web_app;
mod websocket;
mod websocket_lambda;
mod workflow;
