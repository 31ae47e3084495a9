"""rtscore models: training sets from the topics, training, and the model registry."""
