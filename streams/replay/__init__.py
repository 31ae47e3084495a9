"""`rtscore replay`: copy a time range of a topic to another topic, partition for partition."""
