"""Graph-based KD on graph data: GNN teachers distilled into graph-free MLPs and smaller GNNs."""
