"""The whole relay on one machine: DynamoDB Local, moto, Kontur simulators, a scheduler, a live view."""
