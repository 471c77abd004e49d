"""Weight-free methods: they work out of the box, with no download, and are the defaults of each task."""
