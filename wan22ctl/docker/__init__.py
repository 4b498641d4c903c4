"""docker-py adapter: connection, images, containers, exec streaming with exit codes."""
