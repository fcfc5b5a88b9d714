"""Small experiments that check the paper's claims where everything is known exactly.

`eor.lab.pointmass`: a 2-D point mass with exact edge-of-reach labels and oracle values;
`eor.lab.edge_of_reach`: base, base + oracle patch and RAVL trained on it with the true
dynamics (`eor lab edge-of-reach`, docs/lab.md).
"""
