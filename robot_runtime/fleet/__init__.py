"""The robot's side of the fleet (to come): the upload agent, release verification and the model store.

May import the contracts and `capture`."""
