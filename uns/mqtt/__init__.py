"""MQTT: broker settings, the one wire codec, the client (engine, CLI, simulator), the demo broker,
a test mosquitto."""
