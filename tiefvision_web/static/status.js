// Status: a button per deployment starts a run of it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.trigger")) {
    button.addEventListener("click", async () => {
      const name = button.dataset.name;
      say("Starting " + name + " …");
      try {
        const run = await api("/api/flows/" + name + "/run", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ parameters: {} }),
        });
        say("Started " + run.deployment + ": run " + run.flow_run_name + " (" + run.state + ")");
      } catch (error) {
        say(error.message, true);
      }
    });
  }
});
