"""docker-py adapter, the only user of docker-py: connection, images, containers, exec streaming, KitContainer."""
