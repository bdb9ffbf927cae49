"""Transports: RabbitMQ and in-process, behind one port."""
