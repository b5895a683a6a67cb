"""Pure views: a record -> tables, notes, figures and status lines (no Gradio, no service, no engine run;
imports ``nscvf``'s pure functions, ``webapp.state`` and ``webapp.views``)."""
