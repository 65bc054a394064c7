"""Outbound lifecycle webhooks: the outbox (`events`), subscriptions (`service`,
`endpoints`) and the engine role that sends them (`sender`)."""
