"""MQTT: broker settings, the one wire codec, the engine's client, the demo broker, a test mosquitto."""
