"""Running a bundle at the control rate: policy runner, chunk executor and scheduler, safety, engines.

May import the contracts (`bundle`, `episode`, `messages`, `files`); nothing else of the project."""
